#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shadower_actors::fuzzing::alert_rule(data));
