//! gleitzeit-worker (being written).
