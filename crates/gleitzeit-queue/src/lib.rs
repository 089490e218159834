//! gleitzeit-queue (being written).
