//! Compiles `tierlog/v1/tierlog.proto` with protox (a protobuf compiler in Rust), so building
//! needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tierlog/v1/tierlog.proto");
    let fds = protox::compile(["tierlog/v1/tierlog.proto"], ["."])?;
    // `bytes` fields decode as `Bytes` slices of the request buffer: no copy per record. Maps
    // are ordered (settings print in name order).
    tonic_prost_build::configure()
        .bytes(".")
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
