import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A carrier feed as carriers write them: the stock kafka-clients producer.
 *
 * Usage: java CarrierFeed BOOTSTRAP COMPRESSION < lines, each "topic TAB key TAB value".
 * Every send is awaited, so a refused record fails the run (exit status 1).
 */
public final class CarrierFeed {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put("bootstrap.servers", args[0]);
        config.put("compression.type", args[1]);
        // a few records per batch, so that the codec really compresses a batch
        config.put("linger.ms", "20");
        config.put("key.serializer", ByteArraySerializer.class.getName());
        config.put("value.serializer", ByteArraySerializer.class.getName());
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isEmpty()) {
                    continue;
                }
                String[] fields = line.split("\t", 3);
                sent.add(producer.send(new ProducerRecord<>(
                    fields[0], fields[1].getBytes(StandardCharsets.UTF_8), fields[2].getBytes(StandardCharsets.UTF_8))));
            }
            producer.flush();
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata written = future.get();
                System.out.println(written.topic() + "\t" + written.partition() + "\t" + written.offset());
            }
        }
    }
}
