terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # This stack creates the state bucket, so its own state starts local. After the first apply,
  # move it into the bucket it made: uncomment the block below and run
  #   terraform init -migrate-state -backend-config="bucket=<state_bucket>" -backend-config="region=<region>"
  # backend "s3" {
  #   key          = "mailroom/bootstrap/terraform.tfstate"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}
