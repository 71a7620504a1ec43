# Remote state in S3 with S3-native locking (a .tflock object beside the state; Terraform >= 1.10).
# The bucket and region are per account, so they come from a partial configuration:
#   terraform init -backend-config=backend.hcl
# where backend.hcl holds `bucket = "<bootstrap output state_bucket>"` and `region = "..."`
# (see backend.hcl.example; CI passes the same values with -backend-config=...).
terraform {
  backend "s3" {
    key          = "mailroom/dev/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
