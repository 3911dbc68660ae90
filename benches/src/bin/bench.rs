//! The load harness: `cargo run --release -p portcullis-benches --bin bench -- --scenarios all`
//! (`--quick` for a run of about a minute and a half; `--help` for the rest).

fn main() -> std::process::ExitCode {
    portcullis_benches::harness::main()
}
