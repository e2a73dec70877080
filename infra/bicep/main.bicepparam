// Example parameters: copy, fill in, and deploy with
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
using 'main.bicep'

param backupAccountName = 'contosovault'
param sourceAccountName = 'contosolake'
param sourceResourceGroupName = 'rg-datalake'
param queueName = 'lakevault-copy'
param enableVersioning = false
// AKS: az aks show -g <rg> -n <cluster> --query oidcIssuerProfile.issuerUrl -o tsv
param aksOidcIssuerUrl = 'https://westeurope.oic.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/00000000-0000-0000-0000-000000000000/'
// VM scale set of workers (infra/vmss), if any:
param workerScaleSetId = ''
