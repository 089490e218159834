//! gleitzeit-llm (being written).
