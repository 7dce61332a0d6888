import java.nio.file.Path;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

/**
 * A real Neo4j Community server, embedded, answering Bolt on 127.0.0.1:PORT without auth,
 * for the tests of qanat's Neo4j pull source: {@code java Neo4jLocal DATA_DIR PORT}.
 * scripts/neo4j-local.sh fetches the jars (pom.xml beside this file), compiles and starts it.
 */
public class Neo4jLocal {
    public static void main(String[] args) throws Exception {
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(Path.of(args[0]))
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", Integer.parseInt(args[1])))
            .setConfig(GraphDatabaseSettings.auth_enabled, false)
            .build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown));
        System.out.println("neo4j ready on 127.0.0.1:" + args[1]);
        Thread.currentThread().join();
    }
}
