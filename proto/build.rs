fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ao.proto");
    tonic_prost_build::configure().compile_protos(&["proto/ao.proto"], &["proto"])?;
    Ok(())
}
