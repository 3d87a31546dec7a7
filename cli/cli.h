/* cli.h -- the rrdeploy command line, for main.c.
 *
 * Each entry point takes the arguments of one command (argv[0] is the
 * command's name; argv is borrowed for the call) and returns the process
 * exit status: 0 ok, 1 refused or failed, 2 usage, 3 connection or timeout,
 * 130 interrupted. Messages go to stderr as one line "rrdeploy: ...". */
#ifndef RR_CLI_H
#define RR_CLI_H

#include <stdbool.h>

/* Is name one of the client commands (add, list, status, update, remove,
 * run, cancel, runs, watch, preview), which talk to a running server? */
bool cli_is_client_command(const char *name);

/* Run a client command: argv[0] is its name. */
int cli_run_client(int argc, char **argv);

#endif
