//! Links libtorch so that the binaries run without LD_LIBRARY_PATH and use CUDA when present.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    // torch-sys exports the wheel's lib directory; an rpath to it makes every binary (tests and
    // benches included) find libtorch wherever the project is cloned.
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.to_string_lossy());
    }
    // Nothing in our code references torch_cuda directly, so without --no-as-needed the linker
    // drops it and tch::Cuda::is_available() is false even on a GPU machine.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
