//! gleitzeit-submit (being written).
