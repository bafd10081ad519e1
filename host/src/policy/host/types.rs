//! `tollgate:policy/types` and `tollgate:policy/service-types`: types only,
//! nothing to serve.

use crate::policy::bindings;
use crate::policy::StepState;

impl bindings::types::Host for StepState {}

impl bindings::service_types::Host for StepState {}

impl bindings::types2::Host for StepState {}
