/*  keygen.c - versync keygen: a CURVE key pair as czmq certificates.                        */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char s_help[] =
    "usage: versync keygen PATH\n"
    "\n"
    "Makes a CURVE key pair as czmq certificates: PATH holds the public key (give it to the\n"
    "broker's --publishers or --subscribers folder, or as --broker-key), PATH_secret holds\n"
    "both keys (mode 0600; give it as --cert). Missing folders are created (mode 0700);\n"
    "existing key files are never overwritten.\n"
    "The public key is printed on stdout.\n";

/*  Creates the missing folders above path (mode 0700: they hold secret keys).               */
static int s_make_parents(const char *path)
{
    char folder[4096];
    if (snprintf(folder, sizeof folder, "%s", path) >= (int) sizeof folder) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *slash = strchr(folder + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(folder, 0700) != 0 && errno != EEXIST) {
            return -1;
        }
        *slash = '/';
    }
    return 0;
}

int vs_cmd_keygen(int argc, char **argv)
{
    if (argc == 2 && vs_cli_is_help(argv[1])) {
        fputs(s_help, stdout);
        return VS_CLI_EXIT_OK;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fputs(s_help, stderr);
        return VS_CLI_EXIT_USAGE;
    }
    const char *path = argv[1];
    char secret_path[4096];
    if (snprintf(secret_path, sizeof secret_path, "%s_secret", path) >= (int) sizeof secret_path) {
        vs_cli_error("keygen", "cannot write key '%s': path too long", path);
        return VS_CLI_EXIT_RUNTIME;
    }
    struct stat info;
    if (stat(path, &info) == 0 || stat(secret_path, &info) == 0) {
        vs_cli_error("keygen", "cannot write key '%s': it exists already (remove it first)",
                     stat(path, &info) == 0 ? path : secret_path);
        return VS_CLI_EXIT_RUNTIME;
    }
    if (s_make_parents(path) != 0) {
        vs_cli_error("keygen", "cannot create the folder of '%s': %s", path, strerror(errno));
        return VS_CLI_EXIT_RUNTIME;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        vs_cli_error("keygen", "cannot make a key pair: out of memory");
        return VS_CLI_EXIT_RUNTIME;
    }
    zcert_set_meta(cert, "created-by", "versync keygen");
    /*  The secret file is created with mode 0600 from the start: no window where others
        could read it.                                                                       */
    mode_t previous = umask(0077);
    int secret_rc = zcert_save_secret(cert, secret_path);
    umask(previous);
    int public_rc = secret_rc == 0 ? zcert_save_public(cert, path) : -1;
    if (secret_rc != 0 || public_rc != 0 || chmod(secret_path, 0600) != 0) {
        vs_cli_error("keygen", "cannot write key '%s': %s", secret_rc != 0 ? secret_path : path,
                     strerror(errno));
        zcert_destroy(&cert);
        return VS_CLI_EXIT_RUNTIME;
    }
    printf("%s\n", zcert_public_txt(cert));
    zcert_destroy(&cert);
    return VS_CLI_EXIT_OK;
}
