//! `tollgate:policy/kv`: a durable key-value namespace per plugin in the
//! store, bounded by the step's `kv` grant (bytes, keys, value size).

use crate::policy::bindings;
use crate::policy::bindings::service_types::ServiceError;
use crate::policy::StepState;

impl StepState {
    /// The store tree of this plugin's namespace.
    fn kv_tree(&self) -> String {
        format!("kv/{}", self.plugin)
    }

    fn store(&self) -> Result<&crate::store::Store, ServiceError> {
        self.services
            .store
            .as_ref()
            .ok_or_else(|| ServiceError::Unavailable("no store in this process".into()))
    }
}

impl bindings::kv::Host for StepState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, ServiceError> {
        self.grant("kv")?;
        check_kv_key(&key)?;
        let store = self.store()?;
        store
            .get(&self.kv_tree(), key.as_bytes())
            .map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), ServiceError> {
        self.grant("kv")?;
        check_kv_key(&key)?;
        let limits = self.grants.kv_limits().unwrap_or_default();
        if value.len() as u64 > limits.max_value {
            return Err(ServiceError::Invalid(format!(
                "value of {} bytes is over the limit of {} bytes (max-value of the step's kv grant)",
                value.len(),
                limits.max_value
            )));
        }
        let store = self.store()?;
        store
            .kv_write_durable(
                &self.kv_tree(),
                key.as_bytes(),
                Some(&value),
                limits.max_bytes,
                limits.max_keys,
            )
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
            .map_err(|why| {
                ServiceError::Invalid(format!(
                    "kv namespace of plugin `{}` is full: {why}; delete keys or raise the limit in the step's kv grant",
                    self.plugin
                ))
            })
    }

    fn delete(&mut self, key: String) -> Result<(), ServiceError> {
        self.grant("kv")?;
        check_kv_key(&key)?;
        let store = self.store()?;
        store
            .kv_write_durable(&self.kv_tree(), key.as_bytes(), None, u64::MAX, u64::MAX)
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
            .map_err(ServiceError::Invalid)
    }
}

/// Keys are 1 to 512 bytes (the empty key holds the namespace's usage).
fn check_kv_key(key: &str) -> Result<(), ServiceError> {
    if key.is_empty() || key.len() > 512 {
        return Err(ServiceError::Invalid("key must be 1 to 512 bytes".into()));
    }
    Ok(())
}
