#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    diffgap::fuzzing::catalog_files(data);
});
