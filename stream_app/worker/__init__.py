"""The Faust worker shell: agents, intake, offsets, writer, committer, ownership."""
