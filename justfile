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

# What CI runs.
ci:
    bash .ci/run
