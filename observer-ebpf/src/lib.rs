//! Empty library target: lets `observer` declare this crate as a build-dependency so cargo
//! rebuilds it when the programs change (the programs themselves are in the `observer` binary).
#![no_std]
