"""Small runnable programs that the book's sections start as subprocesses."""
