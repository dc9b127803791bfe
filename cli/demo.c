/*  demo.c - versync demo: a broker, a publisher and two subscribers on this machine with
    temporary files, sample writes, and the slaves shown converging row for row.            */
#include <errno.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "vs_broker.h"
#include "vs_publisher.h"
#include "vs_subscriber.h"

static const char s_help[] =
    "usage: versync demo\n"
    "\n"
    "Runs everything on this machine with temporary files: makes keys, starts a broker, a\n"
    "publisher on a sample master database and a subscriber, writes inserts, updates,\n"
    "deletes, a primary key change and a multi-table transaction, and shows the slave\n"
    "converging to the master row for row; then a late subscriber replays the history.\n"
    "Cleans up after itself. Exits 1 if a slave does not converge within 30 seconds.\n";

static const char *s_tables[] = {"orders", "customers"};

typedef struct {
    int64_t rows;
    uint8_t digest[32];
} s_table_digest_t;

/*  Hashes a table's rows in primary key order with their exact types.                      */
static void s_digest(sqlite3 *db, const char *table, s_table_digest_t *out)
{
    memset(out, 0, sizeof *out);
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, sizeof out->digest);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY 1", table);
    sqlite3_stmt *statement = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &statement, NULL) == SQLITE_OK) {
        while (sqlite3_step(statement) == SQLITE_ROW) {
            out->rows++;
            int columns = sqlite3_column_count(statement);
            for (int column = 0; column < columns; column++) {
                uint8_t type = (uint8_t) sqlite3_column_type(statement, column);
                crypto_generichash_update(&state, &type, 1);
                const void *bytes = NULL;
                int64_t integer = 0;
                double real = 0;
                size_t size = 0;
                if (type == SQLITE_INTEGER) {
                    integer = sqlite3_column_int64(statement, column);
                    bytes = &integer, size = sizeof integer;
                } else if (type == SQLITE_FLOAT) {
                    real = sqlite3_column_double(statement, column);
                    bytes = &real, size = sizeof real;
                } else if (type != SQLITE_NULL) {
                    bytes = sqlite3_column_blob(statement, column);
                    size = (size_t) sqlite3_column_bytes(statement, column);
                }
                uint64_t length = size;
                crypto_generichash_update(&state, (const uint8_t *) &length, sizeof length);
                if (size) {
                    crypto_generichash_update(&state, bytes, size);
                }
            }
        }
    }
    sqlite3_finalize(statement);
    crypto_generichash_final(&state, out->digest, sizeof out->digest);
}

/*  Polls until every demo table of the slave equals the master's; prints the outcome.      */
static bool s_wait_converged(const char *master_path, const char *slave_path, const char *label)
{
    int64_t start = zclock_mono();
    sqlite3 *master = NULL, *slave = NULL;
    sqlite3_open_v2(master_path, &master, SQLITE_OPEN_READONLY, NULL);
    bool equal = false;
    s_table_digest_t mine[2], theirs[2];
    while (!zsys_interrupted && zclock_mono() - start < 30000) {
        if (!slave && sqlite3_open_v2(slave_path, &slave, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
            sqlite3_close(slave);
            slave = NULL;
        }
        equal = slave != NULL;
        for (int table = 0; table < 2 && equal; table++) {
            s_digest(master, s_tables[table], &mine[table]);
            s_digest(slave, s_tables[table], &theirs[table]);
            equal = mine[table].rows == theirs[table].rows
                 && memcmp(mine[table].digest, theirs[table].digest, 32) == 0;
        }
        if (equal) {
            break;
        }
        zclock_sleep(2);
    }
    if (equal) {
        printf("  %-34s slave matches master row for row: %lld orders, %lld customers "
               "(%lld ms)\n",
               label, (long long) theirs[0].rows, (long long) theirs[1].rows,
               (long long) (zclock_mono() - start));
    } else {
        printf("  %-34s slave did NOT converge within 30 s\n", label);
    }
    sqlite3_close(master);
    sqlite3_close(slave);
    return equal;
}

static bool s_exec(sqlite3 *db, const char *sql)
{
    char *error = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
        vs_cli_error("demo", "cannot write the sample data: %s", error ? error : "?");
        sqlite3_free(error);
        return false;
    }
    return true;
}

static bool s_insert_orders(sqlite3 *db, int first, int count)
{
    sqlite3_stmt *insert = NULL;
    if (!s_exec(db, "BEGIN")
        || sqlite3_prepare_v2(db,
                              "INSERT INTO orders(id, customer, qty, price, note) "
                              "VALUES (?1, 'customer-' || (?1 % 50), ?1 % 7, ?1 * 0.25, "
                              "CASE WHEN ?1 % 3 = 0 THEN NULL ELSE 'note ' || ?1 END)",
                              -1, &insert, NULL)
               != SQLITE_OK) {
        sqlite3_finalize(insert);
        return false;
    }
    bool ok = true;
    for (int id = first; id < first + count && ok; id++) {
        sqlite3_bind_int(insert, 1, id);
        ok = sqlite3_step(insert) == SQLITE_DONE;
        sqlite3_reset(insert);
    }
    sqlite3_finalize(insert);
    return ok && s_exec(db, "COMMIT");
}

static bool s_make_keys(const char *dir, zcert_t **broker, zcert_t **publisher,
                        zcert_t **subscriber)
{
    char path[4096];
    *broker = zcert_new();
    *publisher = zcert_new();
    *subscriber = zcert_new();
    snprintf(path, sizeof path, "%s/publishers", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/subscribers", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/publishers/demo-publisher", dir);
    bool ok = *broker && *publisher && *subscriber && zcert_save_public(*publisher, path) == 0;
    snprintf(path, sizeof path, "%s/subscribers/demo-subscriber", dir);
    return ok && zcert_save_public(*subscriber, path) == 0;
}

int vs_cmd_demo(int argc, char **argv)
{
    if (argc == 2 && vs_cli_is_help(argv[1])) {
        fputs(s_help, stdout);
        return VS_CLI_EXIT_OK;
    }
    if (argc != 1) {
        fputs(s_help, stderr);
        return VS_CLI_EXIT_USAGE;
    }
    if (sodium_init() < 0) {
        vs_cli_error("demo", "cannot initialise libsodium");
        return VS_CLI_EXIT_RUNTIME;
    }
    int exit_code = VS_CLI_EXIT_RUNTIME;
    char template[] = "/tmp/versync-demo.XXXXXX";
    char *dir = mkdtemp(template);
    zcert_t *broker_cert = NULL, *publisher_cert = NULL, *subscriber_cert = NULL;
    zactor_t *broker = NULL, *publisher = NULL, *subscriber = NULL, *late = NULL;
    sqlite3 *master = NULL;
    char *request_endpoint = NULL, *live_endpoint = NULL;
    char master_path[4096], slave_path[4096], late_path[4096], data_dir[4096];
    char publishers_dir[4096], subscribers_dir[4096];
    if (!dir) {
        vs_cli_error("demo", "cannot create a temporary folder in /tmp: %s", strerror(errno));
        return VS_CLI_EXIT_RUNTIME;
    }
    snprintf(master_path, sizeof master_path, "%s/master.db", dir);
    snprintf(slave_path, sizeof slave_path, "%s/slave.db", dir);
    snprintf(late_path, sizeof late_path, "%s/late-slave.db", dir);
    snprintf(data_dir, sizeof data_dir, "%s/broker-data", dir);
    snprintf(publishers_dir, sizeof publishers_dir, "%s/publishers", dir);
    snprintf(subscribers_dir, sizeof subscribers_dir, "%s/subscribers", dir);
    printf("versync demo in %s\n", dir);

    if (!s_make_keys(dir, &broker_cert, &publisher_cert, &subscriber_cert)) {
        vs_cli_error("demo", "cannot make keys in '%s'", dir);
        goto cleanup;
    }
    printf("  keys made: broker, publisher, subscriber (CURVE)\n");

    /* A program sharing a database with the publisher sets a busy timeout (README). */
    if (sqlite3_open(master_path, &master) != SQLITE_OK
        || sqlite3_busy_timeout(master, 10000) != SQLITE_OK
        || !s_exec(master, "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, "
                           "qty INTEGER, price REAL, note TEXT);"
                           "CREATE TABLE customers(name TEXT PRIMARY KEY, city TEXT, "
                           "balance REAL) WITHOUT ROWID;")
        || !s_insert_orders(master, 1, 1000)) {
        vs_cli_error("demo", "cannot create the master database '%s'", master_path);
        goto cleanup;
    }
    printf("  master.db made with 1000 orders written before any replication\n");

    vs_logger_t quiet = vs_cli_logger();
    if (!getenv("VERSYNC_LOG")) {
        quiet.arg = (void *) (intptr_t) VS_LOG_WARNING;
    }
    vs_broker_config_t broker_config = {
        .data_dir = data_dir,
        .cert = broker_cert,
        .publishers_dir = publishers_dir,
        .subscribers_dir = subscribers_dir,
        .request_endpoint = "tcp://127.0.0.1:*",
        .live_endpoint = "tcp://127.0.0.1:*",
        .logger = quiet,
    };
    broker = vs_cli_start_actor("demo", vs_broker_actor, &broker_config);
    if (!broker) {
        goto cleanup;
    }
    zstr_send(broker, "ENDPOINTS");
    if (zstr_recvx(broker, &request_endpoint, &live_endpoint, NULL) != 2) {
        vs_cli_error("demo", "the broker did not tell its endpoints");
        goto cleanup;
    }
    printf("  broker started: requests on %s, live on %s\n", request_endpoint, live_endpoint);

    vs_publisher_config_t publisher_config = {
        .db_path = master_path,
        .broker_endpoint = request_endpoint,
        .broker_public_key = zcert_public_txt(broker_cert),
        .cert = publisher_cert,
        .logger = quiet,
    };
    publisher = vs_cli_start_actor("demo", vs_publisher_actor, &publisher_config);
    if (!publisher) {
        goto cleanup;
    }
    const char *streams[] = {"master"};
    vs_subscriber_config_t subscriber_config = {
        .db_path = slave_path,
        .broker_endpoint = request_endpoint,
        .live_endpoint = live_endpoint,
        .broker_public_key = zcert_public_txt(broker_cert),
        .cert = subscriber_cert,
        .streams = streams,
        .stream_count = 1,
        .logger = quiet,
    };
    subscriber = vs_cli_start_actor("demo", vs_subscriber_actor, &subscriber_config);
    if (!subscriber) {
        goto cleanup;
    }
    printf("  publisher (stream 'master') and subscriber (slave.db) started\n\n");

    bool ok = s_wait_converged(master_path, slave_path, "existing rows replicated:");
    for (int batch = 0; batch < 9 && ok; batch++) {
        ok = s_insert_orders(master, 1001 + batch * 1000, 1000);
    }
    ok = ok && s_wait_converged(master_path, slave_path, "9000 inserts in 9 transactions:");
    ok = ok && s_exec(master, "UPDATE orders SET qty = qty + 100, note = 'updated' "
                              "WHERE id % 10 = 0")
      && s_wait_converged(master_path, slave_path, "1000 updates:");
    ok = ok && s_exec(master, "DELETE FROM orders WHERE id % 25 = 1")
      && s_wait_converged(master_path, slave_path, "400 deletes:");
    ok = ok && s_exec(master, "UPDATE orders SET id = 100000 WHERE id = 2")
      && s_wait_converged(master_path, slave_path, "primary key change 2 -> 100000:");
    ok = ok && s_exec(master, "BEGIN; INSERT INTO customers VALUES ('ada', 'London', 12.5), "
                              "('linus', 'Helsinki', NULL), ('grace', x'4e5943', 3); "
                              "UPDATE orders SET customer = 'ada' WHERE id < 50; COMMIT")
      && s_wait_converged(master_path, slave_path, "multi-table transaction:");
    if (!ok) {
        goto cleanup;
    }

    subscriber_config.db_path = late_path;
    late = vs_cli_start_actor("demo", vs_subscriber_actor, &subscriber_config);
    if (!late || !s_wait_converged(master_path, late_path, "late subscriber replays history:")) {
        goto cleanup;
    }
    printf("\nEvery change reached both slaves through the CURVE-encrypted broker.\n"
           "Next: README.md shows the same across machines with 'versync keygen', 'broker',\n"
           "'publish', 'subscribe' and 'status'.\n");
    exit_code = VS_CLI_EXIT_OK;
cleanup:
    zactor_destroy(&late);
    zactor_destroy(&subscriber);
    zactor_destroy(&publisher);
    zactor_destroy(&broker);
    sqlite3_close(master);
    vs_cli_cert_destroy(&broker_cert);
    vs_cli_cert_destroy(&publisher_cert);
    vs_cli_cert_destroy(&subscriber_cert);
    zstr_free(&request_endpoint);
    zstr_free(&live_endpoint);
    char command[4200];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0) {
        vs_cli_error("demo", "cannot remove '%s'", dir);
    }
    printf("%s\n", exit_code == VS_CLI_EXIT_OK ? "demo finished; temporary files removed"
                                                : "demo failed; temporary files removed");
    return exit_code;
}
