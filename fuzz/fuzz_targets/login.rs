#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| isctl::engine::iscsi::fuzzing::login(data));
