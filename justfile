# The recipes people use. `just ci` runs exactly what CI runs.

# Run the demo clinic: the cloud and four simulated rooms on this machine.
demo:
    cargo run --release --locked -- demo

# Every test: unit, property and end-to-end.
test:
    cargo test --workspace --locked

# The criterion benches, each against its baseline in the same run.
bench:
    cargo bench --locked --bench session_doc
    cargo bench --locked --bench sync
    cargo bench --locked --bench dashboard
    cargo bench --locked --bench appliance_memory
    cargo bench --locked --bench codec
    cargo bench --locked --bench connections
    cargo bench --locked --bench peer_latency

# Lost and duplicated must be 0: the table is written only when every scenario passed.
# The reliability scenarios (short versions, as CI runs them), then RELIABILITY.md.
reliability:
    #!/usr/bin/env bash
    set -euo pipefail
    rows="$PWD/target/reliability-rows.tsv"
    mkdir -p target && rm -f "$rows"
    VIGIL_RELIABILITY_OUT="$rows" cargo test --locked --test scenarios --test scenarios_appliance --test kill_loop --test scale_out --test peers
    cargo run --locked --quiet -- reliability-table --rows "$rows" --out RELIABILITY.md \
        --produced "Produced $(date -u '+%Y-%m-%d %H:%M UTC') from commit $(git describe --always --dirty) on a $(nproc)-core machine, debug build as CI runs it."

# The long versions of the reliability scenarios (a quarter of an hour); rows in target/.
soak:
    VIGIL_RELIABILITY_OUT="$PWD/target/soak-rows.tsv" cargo test --locked --test scenarios --test scenarios_appliance -- --ignored --nocapture

# e.g. just relay 127.0.0.1:4433 "0s ok; 5s cut; 10s ok; 15s loss=20% jitter=200ms"
# The fault-injecting relay in front of a cloud's sync port (timeline as `vigil relay`).
relay upstream timeline="flap 5s 5s":
    cargo run --locked --quiet -- relay --upstream {{upstream}} --timeline "{{timeline}}"

# The Debian packages (release build) in target/debian/: vigil-edge and vigil-cloud.
# For an arm64 appliance add `--target aarch64-unknown-linux-gnu` (with that linker installed).
deb:
    cargo deb --locked -p vigil-edge
    cargo deb --locked -p vigil-cloud

# The Prometheus alert rules: checked, and their unit tests run (needs promtool).
alerts:
    promtool check rules packaging/cloud/vigil-alerts.yml
    cd packaging/cloud && promtool test rules vigil-alerts.test.yml

# What CI runs.
ci:
    bash .ci/run
