"""Celery side: thin tasks that take ids, call classifiers/, and write results through store/."""
