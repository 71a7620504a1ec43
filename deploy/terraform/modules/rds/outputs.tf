output "endpoint" {
  description = "host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "address" {
  description = "Host name of the database."
  value       = aws_db_instance.this.address
}

output "database_url" {
  description = "DATABASE_URL for mailroom, with TLS required; store it in SSM, never print it."
  value       = "postgres://${var.master_username}:${random_password.master.result}@${aws_db_instance.this.endpoint}/${var.database_name}?sslmode=require"
  sensitive   = true
}

output "instance_identifier" {
  description = "Identifier of the DB instance (CloudWatch DBInstanceIdentifier dimension)."
  value       = aws_db_instance.this.identifier
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.db.id
}
