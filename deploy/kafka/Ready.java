// Readiness probe for the local broker: succeeds once the broker answers a metadata
// request (Admin.describeCluster) and prints the number of live brokers.
// Compiled once by kafka.sh against the kafka-clients jar it fetched.
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public final class Ready {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
    try (Admin admin = Admin.create(props)) {
      int nodes = admin.describeCluster().nodes().get(3, TimeUnit.SECONDS).size();
      System.out.println(nodes);
      System.exit(nodes > 0 ? 0 : 1);
    }
  }
}
