/* main.c -- the rrdeploy binary: pick the command, hand over to cli/.
 *
 * Design: dispatch on argv[1] only; every command, its options and its
 * messages live in cli/ (cli/cli.h). Thread: main thread only. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        cli_print_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cli_run_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return cli_run_keys(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("rrdeploy %s\n", RRDEPLOY_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 && argc > 2 && cli_is_client_command(argv[2])) {
        char *sub[] = {argv[2], (char *)"--help", NULL};
        return cli_run_client(2, sub); /* `rrdeploy help add` = `rrdeploy add --help` */
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "-h") == 0) {
        cli_print_usage(stdout);
        return 0;
    }
    if (cli_is_client_command(cmd))
        return cli_run_client(argc - 1, argv + 1);
    fprintf(stderr, "rrdeploy: unknown command '%s'\n", cmd);
    cli_print_usage(stderr);
    return 2;
}
