//! Every WGSL file parses and validates with naga, as the device will see it. Needs no device.

#[test]
fn every_shader_validates() {
    use wgunet::kernel::Reads;
    assert!(wgunet::kernel::SHADERS.len() >= 8);
    // Both forms: as written, and with read-only tensors read through textures (CPU adapters).
    for (s, reads) in wgunet::kernel::SHADERS.iter().flat_map(|s| [(s, Reads::Storage), (s, Reads::Textures)]) {
        let src = wgunet::kernel::source(s, reads);
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}.wgsl ({reads:?}) does not parse:\n{}", s.name, e.emit_to_string(&src)));
        // The CPU-lane kernels (`*_lanes.wgsl`) need subgroups; every other shader must run on
        // adapters without them.
        let (capabilities, subgroup_stages) = if s.name.ends_with("_lanes") {
            (naga::valid::Capabilities::SUBGROUP, naga::valid::ShaderStages::COMPUTE)
        } else {
            (naga::valid::Capabilities::empty(), naga::valid::ShaderStages::empty())
        };
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
            .subgroup_stages(subgroup_stages)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl ({reads:?}) does not validate: {e:?}", s.name));
    }
}

#[test]
fn shader_files_on_disk_are_all_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if stem == "common" {
            continue;
        }
        assert!(
            wgunet::kernel::SHADERS.iter().any(|s| s.name == stem),
            "shaders/{stem}.wgsl is not in kernel::SHADERS"
        );
    }
}
