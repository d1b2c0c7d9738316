terraform {
  # Preconditions (used for the cross-variable checks in lifecycle.tf) need 1.2;
  # 1.3 is the oldest release still tested against AWS provider 5.x.
  required_version = ">= 1.3.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
