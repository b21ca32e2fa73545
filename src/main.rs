//! The `chatd` binary: parse the command line and run it.

/// mimalloc: less CPU per request than glibc malloc across threads, and a smaller, steadier
/// footprint per idle connection.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    chatd::cli::main()
}
