/* cli.h -- the rrdeploy command line, for main.c: `serve`, `keys` and the
 * client commands, and the top-level usage text.
 *
 * Each cli_run_*() takes the arguments of one command, argv[0] being the
 * command's name (argv is borrowed for the call), and returns the process
 * exit status: 0 ok, 1 refused or failed, 2 usage, 3 connection or timeout,
 * 130 interrupted. Failures are reported on stderr as "rrdeploy: ..." lines.
 * Main thread only: they parse with getopt and may install signal handlers. */
#ifndef RR_CLI_H
#define RR_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Print the top-level usage text (every command and option) to f. */
void cli_print_usage(FILE *f);

/* `rrdeploy serve [options]`: run the deployment server until SIGINT or
 * SIGTERM. */
int cli_run_serve(int argc, char **argv);

/* `rrdeploy keys create|list|revoke [options]`: API key administration on
 * the database file. */
int cli_run_keys(int argc, char **argv);

/* Is name one of the client commands (add, list, status, update, remove,
 * run, cancel, runs, watch, preview), which talk to a running server? */
bool cli_is_client_command(const char *name);

/* Run a client command: argv[0] is its name. `NAME --help` prints its
 * help. */
int cli_run_client(int argc, char **argv);

#endif
