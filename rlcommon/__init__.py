"""What rlservice and rlproxy share: TLS credentials, bearer tokens, log formats, their flags.

It imports neither of them, so that the proxy stays apart from the service.
"""
