"""AVSBench metrics and the Detectron2 evaluator."""
