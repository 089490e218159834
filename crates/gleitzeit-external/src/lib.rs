//! gleitzeit-external (being written).
