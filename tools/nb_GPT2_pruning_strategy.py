from tools.anatomy_notebooks import strategy_notebook

strategy_notebook("GPT2", uniform_ablation=False)
