# Example secrets module for kubestrap phase 2 ("self-referencing Terraform"): writes the
# bootstrap secrets into Vault KV v2 with the hashicorp/vault provider.
#
# kubestrap runs `terraform init` and `terraform apply` in the playbook's [terraform] dir and
# passes:
# - var.secrets and var.mount through a var-file on an inherited pipe (never argv, never a file);
# - VAULT_ADDR (its port-forward to Vault) and VAULT_TOKEN in the environment, which the vault
#   provider reads by itself.
# The same two variables drive kubestrap's test fixture (tests/fixtures/terraform/vault-kv), so
# this module and the fixture are interchangeable.
#
# STATE SENSITIVITY: vault_kv_secret_v2 stores data_json in the Terraform state, in plain text.
# Whoever can read the state can read every secret written here. Keep the state in a backend
# with encryption at rest and tight access (or OpenTofu with state encryption), never commit it,
# and never share a local terraform.tfstate. After the first run kubestrap needs no bootstrap
# environment variables: later runs find every secret already in Vault with the same value and
# leave this module alone; later changes go through Terraform with its own credentials.

terraform {
  required_version = ">= 1.5"
  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = "~> 4.4"
    }
  }
}

# Address and token come from VAULT_ADDR and VAULT_TOKEN.
provider "vault" {}

variable "mount" {
  description = "Path of the KV v2 secrets engine (kubestrap's [vault] kv_mount)."
  type        = string
  default     = "secret"
}

variable "secrets" {
  description = "Vault path below the mount => { key => value }, from the playbook's [[secrets]]."
  type        = map(map(string))
  sensitive   = true
}

resource "vault_kv_secret_v2" "bootstrap" {
  # Paths are not secret; only the values are.
  for_each = toset(nonsensitive(keys(var.secrets)))

  mount     = var.mount
  name      = each.key
  data_json = jsonencode(var.secrets[each.key])
}

output "paths" {
  description = "The Vault paths managed here (names only)."
  value       = sort(nonsensitive(keys(var.secrets)))
}
