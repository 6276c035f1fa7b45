# The namespace and the settings every Hallmark process reads from its environment.

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = local.labels
  }
}

resource "kubernetes_config_map_v1" "settings" {
  metadata {
    name      = "${var.name}-settings"
    namespace = local.namespace
    labels    = local.labels
  }

  data = local.config_data

  lifecycle {
    precondition {
      condition = (
        var.default_key_manager != "vault"
        || var.vault_token_file != null
        || nonsensitive(var.vault_token != "")
      )
      error_message = "The vault key manager needs vault_token or vault_token_file (the provisioner token)."
    }
    precondition {
      condition = (
        var.default_key_manager != "pkcs11"
        || var.pkcs11_pin_secret_file != null
        || nonsensitive(var.pkcs11_pin_secret != "")
      )
      error_message = "The pkcs11 key manager needs pkcs11_pin_secret or pkcs11_pin_secret_file."
    }
    precondition {
      condition     = var.default_key_manager != "pkcs11" || var.pkcs11_module != null
      error_message = "The pkcs11 key manager needs pkcs11_module (the HSM vendor's library path)."
    }
  }
}

resource "kubernetes_secret_v1" "settings" {
  metadata {
    name      = "${var.name}-settings"
    namespace = local.namespace
    labels    = local.labels
  }

  type = "Opaque"
  data = local.secret_env
}

resource "kubernetes_secret_v1" "files" {
  count = local.has_secret_files ? 1 : 0

  metadata {
    name      = "${var.name}-files"
    namespace = local.namespace
    labels    = local.labels
  }

  type = "Opaque"
  data = var.secret_files
}
