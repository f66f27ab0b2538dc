//! The `rota` binary's library half: the node's TOML config (`config`), shared by the
//! binary, its tests and the fuzz targets. The binary's commands live beside it in
//! `main.rs` and the modules it declares.

pub mod config;
