output "bucket_name" {
  description = "Bucket to upload the built pages to (aws s3 sync dist/ s3://<bucket>/)."
  value       = aws_s3_bucket.site.id
}

output "distribution_id" {
  description = "CloudFront distribution ID (for invalidations after an upload)."
  value       = aws_cloudfront_distribution.site.id
}

output "url" {
  description = "HTTPS URL of the dashboard."
  value       = "https://${length(var.aliases) > 0 ? var.aliases[0] : aws_cloudfront_distribution.site.domain_name}"
}
