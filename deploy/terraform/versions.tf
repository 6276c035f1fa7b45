terraform {
  # optional() attribute defaults need 1.3; nonsensitive() on derived values and the
  # lifecycle preconditions used here are stable from 1.5 on.
  required_version = ">= 1.5"

  required_providers {
    kubernetes = {
      source = "hashicorp/kubernetes"
      # The *_v1 resources with seccomp_profile and topology_spread_constraint.
      version = ">= 2.25"
    }
  }
}
