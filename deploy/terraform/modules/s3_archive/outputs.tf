output "bucket_name" {
  description = "Name of the archive bucket (S3_BUCKET_NAME)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the archive bucket."
  value       = aws_s3_bucket.this.arn
}

output "archive_url" {
  description = "ARCHIVE_URL for mailroom: s3://<bucket> (mailroom adds emails/YYYY/MM/DD/...)."
  value       = "s3://${aws_s3_bucket.this.id}"
}
