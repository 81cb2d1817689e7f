//! Running Terraform (placeholder).
