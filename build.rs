//! Generates the gRPC code of `proto/diffgap/v1/diffgap.proto` (with a vendored protoc, so no
//! system protoc is needed) and links libtorch so that the binaries run without LD_LIBRARY_PATH
//! and use CUDA when present.

use std::path::PathBuf;

const PROTO: &str = "proto/diffgap/v1/diffgap.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    compile_protos()?;
    link_libtorch();
    Ok(())
}

fn compile_protos() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    // A protoc set by the caller wins; otherwise the vendored one.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut builder = tonic_prost_build::configure();
    // GET /v1/info on the HTTP listener answers with InfoResponse as JSON, field for field,
    // described in its OpenAPI document by the same types.
    for message in [
        "InfoResponse",
        "ModelInfo",
        "CatalogInfo",
        "RankLadder",
        "LadderRung",
        "Limits",
    ] {
        builder = builder.type_attribute(
            format!(".diffgap.v1.{message}"),
            "#[derive(serde::Serialize, utoipa::ToSchema)]",
        );
    }
    builder
        .file_descriptor_set_path(out.join("diffgap_descriptor.bin"))
        // Undecodable messages are INVALID_ARGUMENT, not INTERNAL (src/service/api/codec.rs).
        .codec_path("crate::service::api::codec::ClientFaultCodec")
        .compile_protos(&[PROTO], &["proto"])?;
    Ok(())
}

fn link_libtorch() {
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
