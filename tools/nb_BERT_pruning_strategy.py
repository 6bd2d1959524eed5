from tools.anatomy_notebooks import strategy_notebook

strategy_notebook("BERT", uniform_ablation=True)
