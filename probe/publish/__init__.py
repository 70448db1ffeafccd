"""What leaves the machine: the installation's identity (`identity`) and the upload of results
files to a collector (`upload`).
"""
