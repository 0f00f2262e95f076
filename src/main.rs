/// mimalloc rather than glibc's malloc: a loaded node spent ~20% of its CPU allocating and freeing, most of it in
/// glibc's arena bookkeeping (`malloc_consolidate`, `_int_free`); see docs/performance.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
