"""Evaluation data: containers that hold validation rows (`prepare`) and the dataset splits."""
