//! gleitzeit-testkit (being written).
pub mod llm;
pub mod redis;
