//! Test support for Gleitzeit: a throw-away `redis-server` on a free port ([`redis`]), a Redis
//! Sentinel deployment of primary, replicas and sentinels ([`sentinel`]), and HTTP
//! servers that speak the LLM providers' APIs with programmable delays and faults ([`llm`]).
pub mod llm;
pub mod redis;
pub mod sentinel;
