use which::which;

/// Rebuild when bpf-linker changes: it is the linker of this crate, and cargo does not track it.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
