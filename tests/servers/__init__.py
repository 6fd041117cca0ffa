"""Real servers for the tests (moto, Azurite, a GCS emulator, sshd, PostgreSQL), each started
on a free loopback port, waited for, and stopped by PID."""
