#!/usr/bin/env bash
# table.sh RESULTS.tsv - the benchmark's markdown table from run.sh's raw results.
#
# RESULTS.tsv lines: workload <TAB> metric <TAB> system <TAB> run <TAB> value, system being
# versync, postgresql or limit. Each cell is the median [min-max] over the runs; the ratio is
# versync / PostgreSQL taken run by run (pair by pair), then the median of those ratios; "vs
# limit" is versync's median over the limit's median.

set -euo pipefail
results=$1

# The rows: workload|metric key|label|limits|PostgreSQL's metric key when it is not the same.
# Limits are any of "apply", "apply32", "curve", "writer" and "hotwriter" (the master's W1 or
# W5 writes with capture triggers, nothing replicating), "inprocwriter" and "inprochotwriter"
# (the same through a vs_writer). The in-process rows are paired with PostgreSQL's W1 and W5.
cpu_rows() {   # cpu_rows WORKLOAD LABEL [PREFIX]: where the CPU of a throughput workload went
    local process
    for process in writer broker publisher subscriber; do
        echo "$1|${3:-}${process}_cpu_s|$2: CPU s of the $process|"
    done
}

spec() {
    echo "W1|rows_per_s|W1 bulk: rows/s, first commit to all on the slave|apply apply32 curve writer"
    cpu_rows W1 "W1 bulk"
    echo "W1|inproc_rows_per_s|W1 bulk, in-process capture (vs_writer): rows/s|apply apply32 inprocwriter|rows_per_s"
    cpu_rows W1 "W1 bulk, in-process capture" inproc_
    echo "W2|p50_ms|W2 latency: commit to visible, p50 ms|"
    echo "W2|p99_ms|W2 latency: p99 ms|"
    echo "W2|max_ms|W2 latency: max ms|"
    echo "W3|rows_per_s|W3 new replica: rows/s|apply apply32 curve"
    echo "W3|peak_rss_mb|W3 new replica: slave peak RSS MB|"
    local n
    for n in $(awk -F'\t' '$1 ~ /^W4 N=/ { sub(/^W4 N=/, "", $1); print $1 }' "$results" \
               | sort -nu); do
        echo "W4 N=$n|delivered_rows_per_s|W4 fan-out N=$n: delivered rows/s (all subscribers)|curve"
        echo "W4 N=$n|complete_subscribers|W4 fan-out N=$n: subscribers that got every change|"
        echo "W4 N=$n|broker_cpu_s|W4 fan-out N=$n: broker CPU s|"
        echo "W4 N=$n|broker_peak_rss_mb|W4 fan-out N=$n: broker peak RSS MB|"
    done
    echo "W5|updates_per_s|W5 hot rows: updates/s, first commit to last on the slave|apply hotwriter"
    cpu_rows W5 "W5 hot rows"
    echo "W5|inproc_updates_per_s|W5 hot rows, in-process capture (vs_writer): updates/s|apply inprochotwriter|updates_per_s"
    cpu_rows W5 "W5 hot rows, in-process capture" inproc_
    echo "limit|apply_rows_per_s|limit: SQLite upsert, 10,000-row transactions, rows/s|"
    echo "limit|apply32_rows_per_s|limit: the same, 32 rows a statement (as versync's slaves write), rows/s|"
    echo "limit|curve_rows_per_s|limit: ZeroMQ CURVE over loopback, same bytes, rows/s|"
    echo "limit|curve_mb_per_s|limit: ZeroMQ CURVE over loopback, MB/s|"
    echo "limit|writer_rows_per_s|limit: the master's W1 writes with capture triggers, nothing replicating, rows/s|"
    echo "limit|writer_updates_per_s|limit: the master's W5 writes with capture triggers, nothing replicating, updates/s|"
    echo "limit|writer_inproc_rows_per_s|limit: the master's W1 writes through a vs_writer, nothing replicating, rows/s|"
    echo "limit|writer_inproc_updates_per_s|limit: the master's W5 writes through a vs_writer, nothing replicating, updates/s|"
}

spec | awk -F'|' -v results="$results" '
function median(list, n,    i, j, t, a) {
    # list: space-separated numbers
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) {
        t = a[i] + 0
        for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
    }
    if (n == 0) return ""
    g_min = a[1] + 0; g_max = a[n] + 0
    return n % 2 ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function commas(x,    s, sign) {
    sign = x < 0 ? "-" : ""
    s = sprintf("%.0f", x < 0 ? -x : x)
    while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
    return sign s
}
function fmt(x) {
    if (x == "") return "-"
    x += 0
    if (x >= 10000 || x <= -10000) return commas(x)
    if (x >= 100) return sprintf("%.0f", x)
    if (x >= 10) return sprintf("%.1f", x)
    if (x >= 1) return sprintf("%.2f", x)
    return sprintf("%.3f", x)
}
function cell(key, sys,    m) {
    if (!((key, sys) in all)) return "-"
    m = median(all[key, sys])
    if (g_min == g_max) return fmt(m)
    return fmt(m) " [" fmt(g_min) "-" fmt(g_max) "]"
}
BEGIN {
    while ((getline line < results) > 0) {
        split(line, f, "\t")
        key = f[1] SUBSEP f[2]
        all[key, f[3]] = all[key, f[3]] " " f[5]
        value[key, f[3], f[4]] = f[5]
        runs[f[4]] = 1
    }
    lkeys["apply"] = "apply_rows_per_s"; lnames["apply"] = "SQLite apply"
    lkeys["apply32"] = "apply32_rows_per_s"; lnames["apply32"] = "32-row SQLite apply"
    lkeys["curve"] = "curve_rows_per_s"; lnames["curve"] = "CURVE transport"
    lkeys["writer"] = "writer_rows_per_s"; lnames["writer"] = "the writer alone"
    lkeys["hotwriter"] = "writer_updates_per_s"; lnames["hotwriter"] = "the writer alone"
    lkeys["inprocwriter"] = "writer_inproc_rows_per_s"; lnames["inprocwriter"] = "the writer alone"
    lkeys["inprochotwriter"] = "writer_inproc_updates_per_s"
    lnames["inprochotwriter"] = "the writer alone"
    print "| workload, metric | versync | PostgreSQL 15 | ratio | versync vs limit |"
    print "| --- | --- | --- | --- | --- |"
}
{
    key = $1 SUBSEP $2
    pgkey = $5 == "" ? key : $1 SUBSEP $5
    sys = $1 == "limit" ? "limit" : "versync"
    vs = cell(key, sys)
    pg = $1 == "limit" ? "" : cell(pgkey, "postgresql")
    ratios = ""
    for (r in runs) {
        if ((key, "versync", r) in value && (pgkey, "postgresql", r) in value \
            && value[pgkey, "postgresql", r] + 0 != 0) {
            ratios = ratios " " (value[key, "versync", r] / value[pgkey, "postgresql", r])
        }
    }
    ratio = ratios == "" ? "-" : sprintf("%.2f", median(ratios))
    limits = ""
    if ((key, "versync") in all) {
        mine = median(all[key, "versync"])
        n = split($4, names, " ")
        for (k = 1; k <= n; k++) {
            lkey = "limit" SUBSEP lkeys[names[k]]
            if ((lkey, "limit") in all) {
                l = median(all[lkey, "limit"])
                if (l > 0) limits = limits (limits == "" ? "" : ", ") \
                    sprintf("%.2f of %s", mine / l, lnames[names[k]])
            }
        }
    }
    if (limits == "") limits = "-"
    if ($1 == "limit") { pg = "-"; ratio = "-"; limits = "-" }
    if (vs == "-" && pg == "-") next
    printf "| %s | %s | %s | %s | %s |\n", $3, vs, pg, ratio, limits
}'
