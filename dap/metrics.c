/* metrics.c -- GET /metrics: the Prometheus text exposition format 0.0.4.
 *
 * Design: counters live where they are counted (requests in msg.c, ticks and
 * runs in the scheduler); this file only renders them, with the Prometheus
 * naming rules (_total counters, _seconds histograms with cumulative `le`
 * buckets). Label values come from fixed tables, never from clients.
 * Thread: service thread only. */
#include "dap/dap_internal.h"

#include <string.h>

const char *const dap_engine_request_names[DAP_ENGINE_NREQUESTS] = {
    "auth", "rrext_monitor", "rrext_get_task_status", "execute", "terminate",
};

const char *const dap__engine_auth_names[DAP_ENGINE_AUTH_RESULTS] = {
    [DAP_ENGINE_ACCEPTED] = "accepted",
    [DAP_ENGINE_REFUSED] = "refused",
    [DAP_ENGINE_UNAVAILABLE] = "unavailable",
    [DAP_ENGINE_CACHED] = "cached",
};

static void help(struct buf *b, const char *name, const char *type,
                 const char *text)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void histogram(struct buf *b, const char *name, const double *bounds,
                      size_t nbounds, const uint64_t *buckets, double sum)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < nbounds; i++) {
        cum += buckets[i];
        buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                   (unsigned long long)cum);
    }
    cum += buckets[nbounds];
    buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    buf_printf(b, "%s_sum %.9g\n%s_count %llu\n", name, sum, name,
               (unsigned long long)cum);
}

/* Sessions, and what was refused before authentication. */
static void render_connections(struct buf *b, const struct dap_app *app,
                               const struct dap_gauges *g)
{
    const struct dap_metrics *m = &app->metrics;
    help(b, "rrdeploy_connections", "gauge", "Open WebSocket sessions.");
    buf_printf(b, "rrdeploy_connections %llu\n", (unsigned long long)g->connections);
    help(b, "rrdeploy_connections_unauthenticated", "gauge",
         "Open WebSocket sessions not authenticated.");
    buf_printf(b, "rrdeploy_connections_unauthenticated %llu\n",
               (unsigned long long)g->unauthenticated);
    help(b, "rrdeploy_connections_refused_total", "counter",
         "WebSocket sessions closed at once: their address already had the most "
         "unauthenticated connections allowed.");
    buf_printf(b, "rrdeploy_connections_refused_total %llu\n",
               (unsigned long long)dap__guard_stats(app->guard)->refused);
    help(b, "rrdeploy_connections_total", "counter",
         "WebSocket sessions accepted since start.");
    buf_printf(b, "rrdeploy_connections_total %llu\n",
               (unsigned long long)m->connections_total);
    help(b, "rrdeploy_messages_too_large_total", "counter",
         "Connections closed for a message over the size limit.");
    buf_printf(b, "rrdeploy_messages_too_large_total %llu\n",
               (unsigned long long)m->messages_too_large);

    const struct dap_guard_stats *gs = dap__guard_stats(app->guard);
    help(b, "rrdeploy_auth_failures_total", "counter",
         "Failed authentications (a credential checked and refused, or none "
         "given).");
    buf_printf(b, "rrdeploy_auth_failures_total %llu\n",
               (unsigned long long)gs->auth_failed);
    help(b, "rrdeploy_auth_throttled_total", "counter",
         "Authentications refused without checking the credential, by the limit "
         "that refused them (address or global).");
    buf_printf(b, "rrdeploy_auth_throttled_total{limit=\"address\"} %llu\n",
               (unsigned long long)gs->throttled_address);
    buf_printf(b, "rrdeploy_auth_throttled_total{limit=\"global\"} %llu\n",
               (unsigned long long)gs->throttled_global);
    help(b, "rrdeploy_engine_auth_total", "counter",
         "Authentications with a RocketRide credential, by how the engine "
         "answered: accepted, refused, unavailable (it could not be asked or "
         "did not answer in time), cached (a recent verdict answered).");
    for (int r = 0; r < DAP_ENGINE_AUTH_RESULTS; r++)
        buf_printf(b, "rrdeploy_engine_auth_total{result=\"%s\"} %llu\n",
                   dap__engine_auth_names[r],
                   (unsigned long long)m->engine_auth[r]);
}

/* The engine runs go to (serve --engine). */
static void render_engine(struct buf *b, const struct dap_engine_state *en)
{
    help(b, "rrdeploy_engine_reachable", "gauge",
         "1 when the last connection to the RocketRide engine opened.");
    buf_printf(b, "rrdeploy_engine_reachable %d\n", en->reachable ? 1 : 0);
    help(b, "rrdeploy_engine_connects_total", "counter",
         "Connections to the engine that opened.");
    buf_printf(b, "rrdeploy_engine_connects_total %llu\n",
               (unsigned long long)en->connects);
    help(b, "rrdeploy_engine_connect_failures_total", "counter",
         "Connections to the engine that could not be opened.");
    buf_printf(b, "rrdeploy_engine_connect_failures_total %llu\n",
               (unsigned long long)en->connect_failures);
    help(b, "rrdeploy_engine_requests_total", "counter",
         "Requests sent to the engine, by command.");
    for (int i = 0; i < DAP_ENGINE_NREQUESTS; i++)
        buf_printf(b, "rrdeploy_engine_requests_total{command=\"%s\"} %llu\n",
                   dap_engine_request_names[i], (unsigned long long)en->requests[i]);
    help(b, "rrdeploy_engine_owner_refusals_total", "counter",
         "Runs whose owner's credential the engine refused.");
    buf_printf(b, "rrdeploy_engine_owner_refusals_total %llu\n",
               (unsigned long long)en->owner_refusals);
}

void dap__metrics_render(struct buf *b, const struct dap_app *app,
                         const struct dap_gauges *g)
{
    const struct dap_metrics *m = &app->metrics;

    help(b, "rrdeploy_build_info", "gauge", "Version of the running server.");
    buf_printf(b, "rrdeploy_build_info{version=\"%s\"} 1\n", RRDEPLOY_VERSION);
    help(b, "rrdeploy_uptime_seconds", "gauge", "Seconds since the server started.");
    buf_printf(b, "rrdeploy_uptime_seconds %.3f\n",
               time_now_real() - app->started_at);

    render_connections(b, app, g);

    help(b, "rrdeploy_requests_total", "counter",
         "DAP requests answered, by command and outcome (ok or the error code).");
    for (size_t slot = 0; slot < DAP_CMD_SLOTS; slot++) {
        const struct dap_cmd *c = dap__cmd_at(slot);
        if (!c && slot != DAP_CMD_SLOTS - 1)
            continue;
        for (size_t o = 0; o < DAP_OUTCOMES; o++) {
            if (!m->requests[slot][o])
                continue;
            buf_printf(b, "rrdeploy_requests_total{command=\"%s\",outcome=\"%s\"} %llu\n",
                       c ? c->name : "other", dap__outcome_names[o],
                       (unsigned long long)m->requests[slot][o]);
        }
    }
    static const double lat_bounds[] = DAP_LATENCY_BOUNDS;
    help(b, "rrdeploy_request_duration_seconds", "histogram",
         "Time to decode, handle and encode one request.");
    histogram(b, "rrdeploy_request_duration_seconds", lat_bounds,
              DAP_LATENCY_NBUCKETS, m->latency_bucket, m->latency_sum);

    uint64_t hits, misses;
    dap__replies_counts(app->replies, &hits, &misses);
    help(b, "rrdeploy_reply_cache_lookups_total", "counter",
         "status and list requests, by whether a kept reply answered them "
         "(hit) or the reply was rendered (miss).");
    buf_printf(b, "rrdeploy_reply_cache_lookups_total{result=\"hit\"} %llu\n",
               (unsigned long long)hits);
    buf_printf(b, "rrdeploy_reply_cache_lookups_total{result=\"miss\"} %llu\n",
               (unsigned long long)misses);

    help(b, "rrdeploy_deployments", "gauge", "Deployments by state.");
    for (int st = 0; st < 3; st++)
        buf_printf(b, "rrdeploy_deployments{state=\"%s\"} %llu\n",
                   store_state_name((enum store_state)st),
                   (unsigned long long)g->deployments[st]);

    const struct sched_stats *ss = sched_stats(app->sched);
    help(b, "rrdeploy_runs_total", "counter",
         "Runs finished, by outcome (skipped and missed ticks are counted in "
         "rrdeploy_skipped_ticks_total).");
    for (int o = STORE_RUN_SUCCEEDED; o <= STORE_RUN_INTERRUPTED; o++)
        buf_printf(b, "rrdeploy_runs_total{executor=\"%s\",outcome=\"%s\"} %llu\n",
                   g->executor ? g->executor : "exec",
                   store_outcome_name((enum store_outcome)o),
                   (unsigned long long)ss->finished[o]);
    help(b, "rrdeploy_runs_started_total", "counter",
         "Runs handed to the executor.");
    buf_printf(b, "rrdeploy_runs_started_total %llu\n",
               (unsigned long long)ss->runs_started);
    help(b, "rrdeploy_runs_in_progress", "gauge", "Runs queued or running.");
    buf_printf(b, "rrdeploy_runs_in_progress %llu\n",
               (unsigned long long)g->runs_in_progress);
    help(b, "rrdeploy_skipped_ticks_total", "counter",
         "Scheduled ticks not run, by reason: overlap (the previous run was "
         "still going) or missed (server down, clock jump).");
    buf_printf(b, "rrdeploy_skipped_ticks_total{reason=\"overlap\"} %llu\n",
               (unsigned long long)ss->skipped_overlap);
    buf_printf(b, "rrdeploy_skipped_ticks_total{reason=\"missed\"} %llu\n",
               (unsigned long long)ss->missed);
    help(b, "rrdeploy_errored_total", "counter",
         "Deployments marked errored because their owner's key no longer allows runs.");
    buf_printf(b, "rrdeploy_errored_total %llu\n", (unsigned long long)ss->errored);
    static const double late_bounds[] = SCHED_LATENESS_BOUNDS;
    help(b, "rrdeploy_fire_lateness_seconds", "histogram",
         "Seconds from a tick's due instant to its decision.");
    histogram(b, "rrdeploy_fire_lateness_seconds", late_bounds,
              SCHED_LATENESS_NBUCKETS, ss->lateness_bucket, ss->lateness_sum);
    if (g->engine)
        render_engine(b, g->engine);
}

