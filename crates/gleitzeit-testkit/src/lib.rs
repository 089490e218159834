//! Test support for Gleitzeit: a throw-away `redis-server` on a free port ([`redis`]), a Redis
//! Sentinel deployment of primary, replicas and sentinels ([`sentinel`]), a Redis Cluster
//! ([`cluster`]), and HTTP
//! servers that speak the LLM providers' APIs with programmable delays and faults ([`llm`]).
pub mod cluster;
pub mod llm;
pub mod redis;
pub mod sentinel;
