//! The `chatd` binary: parse the command line and run it.

fn main() -> anyhow::Result<()> {
    chatd::cli::main()
}
